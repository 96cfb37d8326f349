"""liveroom: sales forecasts for live-stream e-commerce pitches.

An async engine asks an OpenAI-compatible chat model, role-playing eight
audience personas, three questions per pitch; a torch trainer turns the
answers plus tabular features into GMV, orders, buyers, viewers and the
per-persona audience mix.
"""

__version__ = "0.1.0"
