"""An image reward written by a user, for the labeling tests: 'image_user_rewards:nan_at_third'."""

import numpy as np


def nan_at_third(captions, images):
    """Brightness, except a NaN for the third image (a buggy scorer)."""
    scores = np.array([np.asarray(image, dtype=float).mean() for image in images])
    if len(scores) > 2:
        scores[2] = np.nan
    return scores
