"""Secret scan of the repository (`make secrets`, part of `make test`): detect-secrets against a reviewed baseline.

Scans every file git tracks plus every untracked file it does not ignore (so a key dropped into
the tree fails before it is committed), with the plugins and filters recorded in
`.secrets.baseline`. A finding that is not in the baseline fails the scan (exit 1) and is printed
as file:line and type, never the value.

A false positive: mark the line with `# pragma: allowlist secret`, or refresh the baseline and
review it (`detect-secrets scan --baseline .secrets.baseline $(git ls-files)` then
`detect-secrets audit .secrets.baseline`) and commit it. Never baseline a real credential:
revoke it, remove it from the history, and rotate (`dbtflow blocks setup --rotate`).

Usage: python scripts/check_secrets.py [REPO_ROOT]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def repository_files(root: Path) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def main(argv: list[str]) -> int:
    from detect_secrets.core import baseline
    from detect_secrets.core.secrets_collection import SecretsCollection

    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    os.chdir(root)  # the baseline's paths and exclude patterns are relative to the root
    baseline_file = root / ".secrets.baseline"
    if not baseline_file.is_file():
        print(f"secret scan: {baseline_file} is missing: create it with `detect-secrets scan > .secrets.baseline`")
        return 2
    known = baseline.load(baseline.load_from_file(baseline_file.name), filename=baseline_file.name)
    found = SecretsCollection()
    files = repository_files(root)
    for name in files:
        found.scan_file(name)
    new = found - known
    if not new:
        print(f"secret scan: {len(files)} files, no new secrets")
        return 0
    print("secret scan: possible secrets (not in .secrets.baseline):")
    for filename, secret in sorted(new, key=lambda item: (item[0], item[1].line_number)):
        print(f"  {filename}:{secret.line_number}: {secret.type}")
    print("remove them (and rotate any real credential), or review false positives into the baseline")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
