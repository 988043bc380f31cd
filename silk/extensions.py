"""Extension objects only; the app factory initialises them, so importing costs nothing."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from silk.database import Base

db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate(compare_type=True, render_as_batch=True)
