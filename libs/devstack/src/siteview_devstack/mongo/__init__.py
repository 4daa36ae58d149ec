"""A development STAND-IN for MongoDB: MongoDB's wire protocol over in-memory mongomock storage.

It is NOT MongoDB. It exists because development machines and CI here have neither a MongoDB
server nor Docker. The real PyMongo driver (sync and async) connects to it over TCP; it answers
only the commands the services use (see ``commands.py``), refuses everything else loudly, and
marks its ``hello`` and ``buildInfo`` replies with ``"siteviewStandIn": true`` so that services
can refuse it outside development. Data lives in memory and is lost when it stops.

    standin = MongoStandIn()
    await standin.start(port=0)      # inside a running event loop
    ...  standin.url                 # mongodb://127.0.0.1:<port>
    await standin.stop()

    handle = start_in_thread()       # own loop in a daemon thread, e.g. for pytest fixtures
    handle.stop()
"""

from siteview_devstack.mongo.commands import STANDIN_MARKER
from siteview_devstack.mongo.server import MongoStandIn, StandInThread, main, start_in_thread

__all__ = ["STANDIN_MARKER", "MongoStandIn", "StandInThread", "main", "start_in_thread"]
