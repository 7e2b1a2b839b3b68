"""Rebuild docs/report.png: the default config's HTML report, rendered by headless Chromium.

    snakemake --report /tmp/report.html            # from the committed results, no job runs
    python docs/screenshot_report.py /tmp/report.html docs/report.png

Chromium: `apt-get install chromium` (Debian). The report is a JavaScript app without URLs per
view, so a copy of it gets a script that opens one result (the sweep figure and its caption).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RESULT = "results/default/figures/sweep_smollm2-135m.png"
OPEN_RESULT = f"""<script>
setTimeout(() => app.setView({{navbarMode: "resultinfo", category: "2. Sweep", subcategory: "SmolLM2-135M",
                              content: "img", contentPath: results["{RESULT}"].data_uri, resultPath: "{RESULT}"}}), 1500);
</script></body>"""


def main(report_html: str, png: str) -> None:
    html = Path(report_html).read_text()
    cut = html.rindex("</body>")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html[:cut] + OPEN_RESULT + html[cut + len("</body>"):])
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,760", "--virtual-time-budget=10000", f"--screenshot={png}", page.as_uri()],
                       check=True, capture_output=True)
    image = Image.open(png)
    rows = np.flatnonzero((np.asarray(image.convert("L")) < 250).any(axis=1))
    image.crop((0, 0, image.width, rows[-1] + 1)).save(png, optimize=True)  # headless leaves a blank strip


if __name__ == "__main__":
    main(*sys.argv[1:3])
