"""``bin/serve``: forecast a pitch over HTTP, with a page to compare two scripts.

=============  ==============================================================
``forecast``   pure: a pitch from the API -> checked pitch -> questions; answers -> prediction
``service``    one engine, limits and answer cache shared by every forecast in flight
``app``        the aiohttp routes and their JSON errors
``cli``        the command line
``page/``      the web page (plain HTML, JS and CSS, no build step)
=============  ==============================================================
"""
