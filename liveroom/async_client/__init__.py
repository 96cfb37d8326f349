"""The async scoring engine: moves (id, request) pairs to (id, result) records.

It knows nothing about live rooms: :mod:`liveroom.async_client.score` wires
the stages to it.
"""
