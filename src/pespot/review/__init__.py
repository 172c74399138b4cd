"""``pespot review``: look at spotted events against the video in a browser, correct them, save the labels.

``load`` turns the command line's sources into a ``session.ReviewSession`` (videos, classes, labels, predictions,
scores, the output files); ``media`` makes each video playable frame-exactly (transcoding once when needed);
``server`` serves the page in ``static/`` and the session's JSON API on localhost.
"""
