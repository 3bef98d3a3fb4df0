# Runs first at every boot: pick the app slot (firmware/slots.py: the factory app, an app
# update on trial, or a rollback to the previous app); it sets sys.path for main.py.
from firmware import slots

slots.boot()
del slots
