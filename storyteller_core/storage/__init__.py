"""Where records are kept: the Store protocol, its diskcache and Redis back ends, and migration of old data dirs."""
