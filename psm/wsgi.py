import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psm.settings")
django_application = get_wsgi_application()

# Imported once Django is set up: public index files skip the full stack (channels_app.fast_path).
from channels_app.fast_path import RepoFastPath  # noqa: E402

application = RepoFastPath(django_application)
