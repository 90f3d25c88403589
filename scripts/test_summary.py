"""Print one closing line for `make test`: the pytest JUnit reports added up (the molecule
scenarios are e2e tests, so they are in there too).

    summary: 620 passed, 0 failed, 3 skipped
"""

import glob
import sys
import xml.etree.ElementTree as ET


def main(pattern):
    passed = failed = skipped = 0
    for path in sorted(glob.glob(pattern)):
        for suite in ET.parse(path).getroot().iter("testsuite"):
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            passed += total - bad - skip
            failed += bad
            skipped += skip
    print("summary: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
