"""The PersonaPlex Serve applications, for `serve run` from a checkout of this repo:

    serve run serve_apps.personaplex:sessions_app config=configs/demo.yaml   # conversations, at /
    serve run serve_apps/serve_config.demo.yaml                              # all three applications
    serve deploy serve_apps/serve_config.gpu.yaml                            # a cluster (see docs/cluster.md)

The builders live in the plexray package (plexray.serve.app.builders), so Serve config files can
name them wherever plexray is installed; this module is their name inside the repo.
"""

from plexray.serve.app.builders import ops_app, sessions_app, web_app

__all__ = ["sessions_app", "ops_app", "web_app"]
