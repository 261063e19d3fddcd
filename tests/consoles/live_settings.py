"""Settings for the daphne and console-proxy processes that the console browser tests start.

The test settings, pointed at the test process's own database (given as JSON in
PORTAL_CONSOLE_TEST_DB), so the pages serve the rows the test wrote. PORTAL_TEST_INSTANCE_ID is
inherited from the test process, so domains are cleaned up with the rest of the run's.
"""

import json
import os

from portal.settings.test import *  # noqa: F403

DATABASES = {"default": json.loads(os.environ["PORTAL_CONSOLE_TEST_DB"])}
