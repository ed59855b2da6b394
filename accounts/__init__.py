"""Who may sign in: failed sign-ins counted per username and per client address, with a lockout
shared by every process (accounts/lockout.py), at the admin login and at the API's token check.

It imports no other app of the project.
"""
