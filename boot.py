# Runs first at every boot: nothing to do yet but keep the import path as the board has it.
