"""The async scoring engine: moves (id, request) pairs to (id, result) records.

It knows nothing about live rooms: :mod:`liveroom.scoring.score` wires
the stages to it.
"""
