"""Issue 15 item 8: every name and path validator matches the whole string, so a value
with a trailing newline ("api\\n", "/x\\n") is refused (`$` matches before a final "\\n")."""

import pytest

from agent.schema.dnsnames import valid_label
from controlplane.dashboard.users import check_user_name
from controlplane.public import dist_files


def test_dns_label_with_trailing_newline_is_invalid() -> None:
    assert valid_label("api") and not valid_label("api\n")


def test_user_name_with_trailing_newline_is_refused() -> None:
    assert check_user_name("alice") == "alice"
    with pytest.raises(ValueError):
        check_user_name("alice\n")


def test_wheelhouse_file_with_trailing_newline_is_not_served(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "berth-1.whl").write_bytes(b"PK")
    (tmp_path / "berth-2.whl\n").write_bytes(b"PK")
    assert dist_files(tmp_path) == ["berth-1.whl"]
