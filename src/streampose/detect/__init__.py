"""Person detection and tracking: boxes of every person in a frame, and ids that follow them.

Its own sub-package, below the teachers, because two users need it: the top-down teacher (a box,
then a landmarker per person) and the student at inference time (it needs a person box too).
"""
