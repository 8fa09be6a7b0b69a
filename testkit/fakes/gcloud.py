"""Google's CLIs (gcloud, bq) faked as scripts on PATH: each call is logged, and the few answers
the deploy and monitoring scripts read back are given (a sink's writer identity, a dataset's
access list, the versions of the secrets named in FAKE_VERSIONS); every `describe` of something
not created yet fails, as the real CLIs do."""

from __future__ import annotations

from pathlib import Path


def fake_cli(tmp_path: Path, versions: str = "") -> dict[str, str]:
    """gcloud and bq that log each call and answer just enough: nothing exists yet."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(
        """#!/usr/bin/env bash
echo "gcloud $*" >> "$FAKE_LOG"
[[ "$*" == *"--data-file=-"* ]] && cat > /dev/null  # read the secret from stdin, as gcloud does
case "$*" in
  "logging sinks describe "*"--format=value(writerIdentity)"*)
    echo "serviceAccount:service-42@gcp-sa-logging.iam.gserviceaccount.com" ;;
  "secrets versions list "*)
    for name in $FAKE_VERSIONS; do [ "$name" = "$4" ] && echo "projects/p/secrets/$4/versions/1"; done ;;
  *" describe "*) exit 1 ;;  # lists print nothing: no dashboard or policy yet
esac
exit 0
"""
    )
    (bin_dir / "bq").write_text(
        """#!/usr/bin/env bash
echo "bq $*" >> "$FAKE_LOG"
case "$*" in
  *"show --format=prettyjson"*) echo '{"id": "proj-x:litellm_logs", "etag": "e1",
    "access": [{"role": "OWNER", "specialGroup": "projectOwners"}]}' ;;
  *" show "*) exit 1 ;;
  *"update --source"*) cp "${@: -2:1}" "$FAKE_DIR/updated.json" ;;
esac
exit 0
"""
    )
    for tool in ("gcloud", "bq"):
        (bin_dir / tool).chmod(0o755)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_DIR": str(tmp_path),
        "FAKE_VERSIONS": versions,
    }
