"""``bin/serve``: forecast a pitch over HTTP, with a page to compare two scripts.

=============  ==============================================================
``forecast``   pure: a checked pitch (:mod:`liveroom.data.pitch`) -> questions; answers -> prediction
``service``    one engine, limits and answer cache shared by every forecast in flight
``guard``      pure: who may spend the key (Host, Origin, JSON bodies, token, new pitches per client)
``metrics``    ``GET /metrics`` in the Prometheus text format (prometheus-client)
``app``        the aiohttp routes and their JSON errors
``cli``        the command line
``page/``      the web page (plain HTML, JS and CSS, no build step)
=============  ==============================================================
"""
