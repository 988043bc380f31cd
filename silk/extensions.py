"""Extension objects only; the app factory initialises them, so importing costs nothing."""

from typing import TYPE_CHECKING, ClassVar

from flask_sqlalchemy import SQLAlchemy

from silk.database import Base

db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

# The base of every model: db.Model, a subclass of Base that type checkers cannot see.
if TYPE_CHECKING:
    from sqlalchemy import Table

    class Model(Base):
        """What db.Model is to a type checker: a mapped class on a Table."""

        __abstract__ = True
        __table__: ClassVar[Table]
else:
    Model = db.Model
