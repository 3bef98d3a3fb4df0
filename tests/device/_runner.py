# Runs one device test function under the real micropython: `_runner.py MODULE FUNCTION`.
# Prints DEVTEST-PASS on success; an exception's traceback and a non-zero exit otherwise.
import sys

mod_name, fn_name = sys.argv[1], sys.argv[2]
mod = __import__(mod_name)
getattr(mod, fn_name)()
print("DEVTEST-PASS")
