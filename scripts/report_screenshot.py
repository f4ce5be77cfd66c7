"""Screenshot a report.html in headless chromium (offline), e.g. the README's docs/report.png.

    python scripts/report_screenshot.py docs/scenes-full/report.html docs/report.png [--width 1280] [--height 1500]

Prints the page's size and how long chromium took to load and draw it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tympan.kit.report_html import browse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="a report.html written by `tympan report`")
    parser.add_argument("png", help="the screenshot to write")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default: 1280)")
    parser.add_argument("--height", type=int, default=1500, help="window height in CSS pixels (default: 1500)")
    args = parser.parse_args()
    start = time.perf_counter()
    dom = browse(Path(args.page), screenshot=Path(args.png), width=args.width, height=args.height)
    seconds = time.perf_counter() - start
    size = Path(args.page).stat().st_size
    print(f"{args.page}: {size / 1e6:.2f} MB, {dom.count('<figure')} figures; chromium screenshot and DOM dump "
          f"in {seconds:.1f} s; wrote {args.png}")


if __name__ == "__main__":
    main()
