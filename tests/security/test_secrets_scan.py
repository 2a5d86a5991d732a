"""No secrets in the repository: detect-secrets over every file git tracks (plus new, not ignored ones).

Secrets reach the stack from environment variables (docker/stack.env, git-ignored) and Airflow
connections, never from files in the repository. A finding fails with file:line: type. A false positive
is allowlisted below by its detect-secrets hash (never by file or line alone, so that a real secret
added to the same file is still caught), with the reason it is not a secret.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: (path, detector, secret hash) -> why it is not a secret. The hashes are SHA-1 digests of the flagged
#: strings; the pragma keeps detect-secrets from reporting them as hex strings.
ALLOWED = {
    ("tests/integration/test_airflow.py", "Secret Keyword",
     "522b276a356bdf39013dfabea2cd43e141ecc9e8"): "the user name of a throw-away Airflow test login",  # pragma: allowlist secret
    ("tests/integration/test_download.py", "Hex High Entropy String",
     "b1775a785f09a6ebaf2dc33d6eaeb98974d9cdb8"): "a made-up checksum that must be rejected",  # pragma: allowlist secret
    ("tests/integration/test_s3_and_event_log.py", "Base64 High Entropy String",
     "5c61dd53c5dca4d5275f7a97a0ab35b93443a433"): "an S3 object key of the lake layout",  # pragma: allowlist secret
    ("tests/integration/test_stack.py", "Secret Keyword",
     "a4b48a81cdab1e1a5dd37907d6c85ca1c61ddc7c"): "a wrong password in a test of a refused login",  # pragma: allowlist secret
}


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    type: str
    hash: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.type} (hash {self.hash})"


def repository_files() -> list[str]:
    """Tracked files and new files git does not ignore (what a commit could contain)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return sorted(p for p in set(out.split("\0")) if p and (REPO / p).is_file())


def scan(root: Path, paths: list[str]) -> list[Finding]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    secrets = SecretsCollection(root=str(root))
    with default_settings():  # every detector and the default false-positive filters
        secrets.scan_files(*paths, num_processors=1)
    return sorted(Finding(path, s.line_number, s.type, s.secret_hash) for path, s in secrets)


@pytest.fixture(scope="module")
def repository_findings() -> list[Finding]:
    files = repository_files()
    assert len(files) > 50 and "pyproject.toml" in files and "docker/docker-compose.yaml" in files
    return scan(REPO, files)


def test_repository_has_no_secrets(repository_findings) -> None:
    findings = [f for f in repository_findings if (f.path, f.type, f.hash) not in ALLOWED]
    assert not findings, "secrets in the repository (move them to the environment / an Airflow connection):\n" + \
        "\n".join(map(str, findings))


def test_allowlist_has_no_stale_entries(repository_findings) -> None:
    found = {(f.path, f.type, f.hash) for f in repository_findings}
    stale = [key for key in ALLOWED if key not in found]
    assert not stale, f"allowlisted findings that no longer exist (remove them): {stale}"


def test_the_scan_finds_planted_secrets(tmp_path) -> None:
    # assembled at run time so that this file itself holds no secret
    aws_key = "AKIA" + "Z7Q3" * 4
    private_key = "-----BEGIN " + "RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA" * 4 + "\n-----END RSA PRIVATE KEY-----\n"
    (tmp_path / "settings.py").write_text(f'aws_key = "{aws_key}"\ndb_password = "{"kq8" * 6}"\n')
    (tmp_path / "deploy.key").write_text(private_key)
    (tmp_path / "clean.py").write_text('name = "recops"\n')
    findings = scan(tmp_path, ["settings.py", "deploy.key", "clean.py"])
    kinds = {(f.path, f.line, f.type) for f in findings}
    assert ("settings.py", 1, "AWS Access Key") in kinds
    assert ("settings.py", 2, "Secret Keyword") in kinds
    assert ("deploy.key", 1, "Private Key") in kinds
    assert not any(f.path == "clean.py" for f in findings)
