"""sim_backend"""
