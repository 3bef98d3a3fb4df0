"""Warden host tools: a library with a thin CLI on top (warden.cli).

The sub-packages, by concern: fleet (identities and their books), policy (the policy and
its renderings), broker (mosquitto), logs (the device's log), ota (signed updates), board
(device code on a board or its twin) and cli (the command line); state and errors are shared
by all. This file must not import or re-export anything: import the module you need.
"""
