from recops.cli import run

run()
