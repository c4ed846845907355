"""The live gradient lab: a local web page where a real model trains and its gradients are measured as it does.

    rnnlab lab [--port N] [--no-browser] [--runs DIR]

``settings``  what the page may set, checked by rnnlab's own config validation, with the lab's size limits,
              and the tour's chapters as presets (English and Chinese)
``worker``    one training run in its own process: ``rnnlab.training.trainer.train`` with a control hook that pauses,
              steps once, stops and changes lr or clip (journalled in changes.jsonl), and the measurements of
              ``rnnlab.study.compare.gradient_report`` sent to the page
``app``       the Starlette application and its uvicorn server, bound to 127.0.0.1 only; live updates over
              Server-Sent Events; every asset served from ``static/`` (no CDN)

Needs the ``lab`` extra (starlette, uvicorn): ``pip install -e '.[lab]'``.
"""
