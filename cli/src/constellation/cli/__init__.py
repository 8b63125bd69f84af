"""The `constellation` command: the admin's root of trust for creating and operating clusters."""
