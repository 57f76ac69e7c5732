from agent.reconciler.logfiles import LogCursor, rotate_if_large


def test_rotation_keeps_appending_writer_working(tmp_path):
    log = tmp_path / "service.log"
    with open(log, "ab", buffering=0) as writer:  # like a service's stdout
        writer.write(b"x" * 200)
        assert rotate_if_large(log, max_bytes=100, keep=2)
        writer.write(b"after")
        assert log.read_bytes() == b"after"  # O_APPEND continues at the new end
        assert (tmp_path / "service.log.1").read_bytes() == b"x" * 200
        writer.write(b"y" * 200)
        assert rotate_if_large(log, max_bytes=100, keep=2)
        assert (tmp_path / "service.log.2").read_bytes() == b"x" * 200
    assert not rotate_if_large(log, max_bytes=100)
    assert not rotate_if_large(tmp_path / "missing.log")


def test_cursor_reads_only_new_text_and_survives_truncation(tmp_path):
    log = tmp_path / "service.log"
    log.write_text("old line\n")
    cursor = LogCursor()
    text, end = cursor.read_new(log)
    assert text == "old line\n"  # the recent backlog, for context
    assert cursor.read_new(log) == ("old line\n", end)  # not advanced until delivered
    cursor.advance(log, end)
    assert cursor.read_new(log) is None
    with open(log, "a") as f:
        f.write("new ✓\n")
    text, end = cursor.read_new(log)
    assert text == "new ✓\n"
    cursor.advance(log, end)
    log.write_text("")  # rotated
    with open(log, "a") as f:
        f.write("fresh\n")
    assert cursor.read_new(log)[0] == "fresh\n"
    assert cursor.read_new(tmp_path / "missing") is None
