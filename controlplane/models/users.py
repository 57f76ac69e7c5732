"""Dashboard users, their sessions and the login-failure counts that throttle guessing."""

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.models.base import Base


class User(Base):
    """A person who logs in to the dashboard; the password is stored as an scrypt hash."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]


class UserSession(Base):
    """A logged-in browser: the cookie's SHA-256 digest, never the cookie itself."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LoginFailure(Base):
    """Failed dashboard logins for one key (`user:<name>` or `addr:<ip>`), shared by every
    control-plane process; times are wall-clock seconds."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[float] = mapped_column(Float)
    blocked_until: Mapped[float] = mapped_column(Float)
