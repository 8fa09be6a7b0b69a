from billingproxy.cli import main

main()
