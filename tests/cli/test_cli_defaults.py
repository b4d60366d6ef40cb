"""The CLI imports what a command needs when it runs: its defaults are written out in
zimg.cli._options, and must be the values of the modules they stand for."""

from __future__ import annotations

from tests.cli.heavy import heavy_modules_after
from zimg import images, jobs
from zimg._actor import DEFAULT_ACTOR_LIMITS
from zimg._broker_state import BrokerConfig
from zimg.cli import _options as cli


def test_the_defaults_shown_in_help_are_the_real_ones() -> None:
    config = BrokerConfig()
    assert {
        "job_deadline_s": config.job_deadline_s,
        "max_frame_mb": config.limits.max_frame_bytes >> 20,
        "max_client_jobs_mb": config.max_client_job_bytes >> 20,
        "max_jobs_mb": config.max_job_bytes >> 20,
        "heartbeats_per_s": config.heartbeats_per_s,
        "stall_timeout_s": config.stall_timeout_s,
        "max_nodes": config.max_nodes,
    } == cli.BROKER_DEFAULTS
    assert cli.PAYLOAD_MODES == jobs.PAYLOAD_MODES
    assert cli.DEFAULT_MAX_PIXELS == images.DEFAULT_MAX_PIXELS
    assert cli.DEFAULT_MAX_IMAGE_MB << 20 == images.DEFAULT_MAX_IMAGE_BYTES
    assert DEFAULT_ACTOR_LIMITS.max_processes == cli.DEFAULT_MAX_PROCESSES


def test_help_loads_no_opencv_numpy_or_zeromq() -> None:
    assert heavy_modules_after("--help") == []


def test_dashboard_help_loads_no_web_stack() -> None:
    assert heavy_modules_after("dashboard", "--help") == []
    assert heavy_modules_after("send", "--help") == []
