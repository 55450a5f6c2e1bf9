from services.notify.service import main

raise SystemExit(main())
