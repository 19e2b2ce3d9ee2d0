"""A spool job written for uWSGI, unmodified: uwsgidecorators' @spool.
Imported by the web app (which spools) and by the group's master (so that
its spooler, forked from the master, knows the job); each run is a line
"job-N worker_id pid time" in $FLARE_TEST_DIR/events.txt."""

from uwsgidecorators import spool

from attach_events import log


@spool
def job(args):
    log(f"job-{args['n']}")
