from netlab.agent.node import main

main()
