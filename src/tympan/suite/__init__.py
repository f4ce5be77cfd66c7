"""Generators of tympan's offline HEAR-format task suite (`tympan tasks build`).

Each task has one module-level builder, `build(tasks_dir, suite) -> Path`, that writes one
HEAR task folder (kit/tasks.py's write_task) under tasks_dir and returns its path;
`suite` is "tiny" (a few percent of full, for CI) or "full". Builders are deterministic:
same inputs (package versions), same bytes. TASKS maps task names to their builders.
"""

TASKS = {
    "keywords": "tympan.suite.speech:build_keywords",
    "language": "tympan.suite.speech:build_language",
    "speaker-count": "tympan.suite.speech:build_speaker_count",
    "pitch": "tympan.suite.music:build_pitch",
    "instrument": "tympan.suite.music:build_instrument",
    "note-onsets": "tympan.suite.music:build_note_onsets",
    "drum-hits": "tympan.suite.sounds:build_drum_hits",
    "music-speech": "tympan.suite.sounds:build_music_speech",
    "sound-events": "tympan.suite.sounds:build_sound_events",
}
