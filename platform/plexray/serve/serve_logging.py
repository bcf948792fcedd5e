"""A Serve deployment's `enable_access_log: False` honoured on stderr too (Ray 2.53 applies it to the log file only).

The session ledger turns its access log off: every replica reports to it every `status_report_s`, and each
report would be a line. Ray 2.53 adds the access-log filter to a replica's log file handler but not to its
stderr handler (on by default, RAY_SERVE_LOG_TO_STDERR), and a driver that shows its workers' output
(`plexray serve run`) printed `CALL report OK` every 2 s, forever. Fixed upstream in ray-project/ray#60822
(Serve's `configure_component_logger` filters both handlers); until plexray runs on a Ray with that fix,
`honour_access_log_setting` does the same, in each Ray worker process as it starts (Ray's
`worker_process_setup_hook`, which Serve replicas inherit from the job that deploys them). Only access-log
lines of deployments that turned them off are dropped; every other line, plexray's own included, stays.
"""

from __future__ import annotations

import logging

SETUP_HOOK = "plexray.serve.serve_logging.honour_access_log_setting"


def runtime_env() -> dict:
    """The runtime_env entry that runs the fix in every worker of a job (and the Serve replicas it deploys)."""
    return {"worker_process_setup_hook": SETUP_HOOK}


def honour_access_log_setting() -> None:
    """Wrap Serve's logger setup so that a replica with access logs off filters them on stderr as well."""
    from ray.serve._private import logging_utils, replica

    configure = logging_utils.configure_component_logger
    if getattr(configure, "honours_access_log_setting", False):  # this process did it already
        return

    def configure_component_logger(*, logging_config, **options):
        configure(logging_config=logging_config, **options)
        if logging_config.enable_access_log is False:
            for handler in logging.getLogger(logging_utils.SERVE_LOGGER_NAME).handlers:
                if type(handler) is logging.StreamHandler:  # stderr (the file's is a MemoryHandler, filtered already)
                    handler.addFilter(logging_utils.log_access_log_filter)

    configure_component_logger.honours_access_log_setting = True
    logging_utils.configure_component_logger = configure_component_logger
    replica.configure_component_logger = configure_component_logger  # imported by name there
