"""Optical 1xN switches (Bob routes the link fibre to his receiver), one driver per model."""
