# Every gunicorn worker joins the flare group at $FLARE_ATTACH after it
# loaded the app (with or without --preload): docs/attach.md.
from flare.gunicorn import post_worker_init  # noqa: F401

bind = "0.0.0.0:8000"
workers = 4
