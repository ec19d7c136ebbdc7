"""`edranfusion serve`: a small web application that fuses volumes on the machine running it (say a GPU box).

Layers: storage.py (the --data folder, per-job folders, uploads), jobs.py (one worker thread running the same
``fuse_volumes`` as the CLI), access.py (token, host and cross-site checks), server.py (the Starlette routes),
assets.py (the page and its bundled NiiVue viewer), client.py (a stdlib client for scripts, tests and the load
benchmark). Needs the ``web`` extra: ``pip install "EdranFusionLib[web]"``.
"""
