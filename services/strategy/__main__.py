from services.strategy.runner import main

raise SystemExit(main())
