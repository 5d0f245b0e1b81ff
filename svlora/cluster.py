"""Starting Ray for the stages that use it (svlora.batch, eval --ray): a local Ray on this
machine's cores and GPUs, or a running cluster ("auto", or an address). Ray is an optional
extra: without it, one line says how to install it."""

from __future__ import annotations

import logging
import os

from svlora.errors import SvloraError


def start_ray(address: str | None):
    try:
        import ray
    except ImportError:
        raise SvloraError("this runs on Ray: pip install 'svlora[ray]'") from None
    for name in ("ray", "ray.data"):  # its INFO lines and warnings; errors still show
        logging.getLogger(name).setLevel(logging.ERROR)
    if address is None:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return ray
