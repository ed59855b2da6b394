"""Who may sign in: API keys (accounts/api_keys.py), and failed sign-ins counted per username and
per client address, with a lockout shared by every process (accounts/lockout.py), at the admin
login and at the API's key and token checks.

It imports no other app of the project.
"""
