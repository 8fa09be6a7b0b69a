from billingproxy.cli import run

run()
