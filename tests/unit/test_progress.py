"""Progress from the first pass: windowed rate, ETA from the passes left, an honest resume, throttled lines."""

from __future__ import annotations

import io

from dualpar.cli import cli
from dualpar.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(stream=None, **kw) -> tuple[Progress, Clock, io.StringIO]:
    clock, out = Clock(), stream if stream is not None else io.StringIO()
    return Progress(10, 80, stream=out, clock=clock, **kw), clock, out


def test_eta_is_sane_from_the_first_pass() -> None:
    p, clock, out = _progress()
    p.start(total_passes=100)
    assert p.rate() is None and p.eta_s() is None and "ETA ?" in p.line()
    clock.t += 20.0  # start-up and the pipeline fill: not the pace of the passes left
    p.pass_done()  # the first pass is printed at once; the rate is measured from it
    assert p.rate() is None and p.eta_s() is None
    assert out.getvalue() == "[dualpar] passes 1/100 (1%) | frames 0/80 | ? passes/s | ETA ?\n"
    clock.t += 0.5
    p.pass_done()
    assert p.rate() == 2.0 and p.eta_s() == 98 / 2.0
    for _ in range(8):
        clock.t += 1.0
        p.pass_done()
    assert p.passes == 10 and p.eta_s() == 90 / (9 / 8.5)


def test_the_rate_follows_a_recent_window() -> None:
    p, clock, _ = _progress(window_s=30.0)
    p.start(total_passes=1000)
    for _ in range(60):  # 1 pass/s for a minute (the pipeline filling, say) ...
        clock.t += 1.0
        p.pass_done()
    for _ in range(200):  # ... then 4 passes/s for 50 s: the 30 s window has forgotten the slow start
        clock.t += 0.25
        p.pass_done()
    assert abs(p.rate() - 4.0) < 0.05
    assert abs(p.eta_s() - (1000 - 260) / 4.0) < 2


def test_a_resumed_run_says_so_and_its_rate_counts_only_its_own_passes() -> None:
    p, clock, out = _progress()
    p.resume_from(blocks=3, frames=24)
    p.start(total_passes=100, done_passes=40, iteration=12)
    first = out.getvalue().splitlines()[0]
    assert first == "[dualpar] resumed at iteration 12: 40/100 passes, 24/80 frames, 3/10 blocks already done"
    clock.t += 2.0
    p.pass_done()
    clock.t += 2.0
    p.pass_done()
    assert p.rate() == 0.5  # not 42 passes in 4 s
    assert p.eta_s() == 58 / 0.5
    assert "passes 41/100 (41%) | frames 24/80 | ? passes/s | ETA ?" in out.getvalue()


def test_plain_lines_are_throttled_and_the_end_is_always_printed() -> None:
    p, clock, out = _progress(plain_every_s=10.0)
    p.start(total_passes=20)
    for _ in range(20):
        clock.t += 0.1
        p.pass_done()
    lines = out.getvalue().splitlines()
    assert [x.split("|")[0] for x in lines] == ["[dualpar] passes 1/20 (5%) ", "[dualpar] passes 20/20 (100%) "]
    for _ in range(10):
        p.block_done(8)
    assert out.getvalue().splitlines()[-1].startswith("[dualpar] passes 20/20 (100%) | frames 80/80")
    assert len(out.getvalue().splitlines()) == 3


def test_a_terminal_gets_one_redrawn_bar_and_disabled_progress_prints_nothing() -> None:
    p, clock, out = _progress(stream=Tty())
    p.start(total_passes=4)
    for _ in range(4):
        clock.t += 1.0
        p.pass_done()
    for _ in range(10):
        p.block_done(8)
    text = out.getvalue()
    assert text.startswith("\r[dualpar] [######..................] passes 1/4")
    assert text.count("\n") == 1 and text.endswith("\n") and "[########################] passes 4/4" in text
    quiet, clock, out = _progress(enabled=False)
    quiet.start(total_passes=4)
    quiet.pass_done()
    quiet.block_done(8)
    assert out.getvalue() == ""


def test_a_real_render_reports_progress_before_its_first_block_finishes(tmp_path, capsys) -> None:
    code = cli(
        [
            "model=tiny",
            "frames=33",
            "schedule.steps=3",
            "output.preview=false",
            f"output.dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("[dualpar] passes")]
    assert lines[0].startswith("[dualpar] passes 1/12 (8%) | frames 0/33 |"), lines
    assert lines[-1].startswith("[dualpar] passes 12/12 (100%) | frames 33/33 |"), lines
