"""kmsbox-django under Django's own test runner, on SQLite and on PostgreSQL (runtests.py)."""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
import uuid
from typing import Any

from django.core.exceptions import FieldError
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase, override_settings
from kmsbox_django import ValueTooLarge, WrongValueType, blind, reset_config, rewrite_field, scan_field
from kmsbox_django.conf import get_config
from kmsbox_orm import Sealed

import kmsbox
from kmsbox.testing.counting import CountingKek
from testapp.models import (
    CryptoNote,
    CryptoNoteMigrated,
    Employee,
    FernetNote,
    FernetNoteMigrated,
    Person,
    Token,
)

KEK_VAR = "KMSBOX_DJANGO_TEST_KEK"


def raw(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cursor.fetchall()]


def execute(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


class FreshConfig:
    """Each test starts from the settings' KEK with a cold configuration."""

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        reset_config()
        get_config().keyring.ensure(["testapp_person.email"])


class FieldTests(FreshConfig, TestCase):
    def test_values_round_trip_and_null_stays_null(self) -> None:
        a = Person.objects.create(name="a", ssn="123-45-6789", email="a@x.io", photo=b"\x00\xff", prefs={"k": [1, 2]})
        b = Person.objects.create(name="b")
        a, b = Person.objects.get(pk=a.pk), Person.objects.get(pk=b.pk)
        self.assertEqual((a.ssn, a.email, a.photo, a.prefs), ("123-45-6789", "a@x.io", b"\x00\xff", {"k": [1, 2]}))
        self.assertEqual((b.ssn, b.email, b.photo, b.prefs, b.email_index), (None, None, None, None, None))
        stored = raw("SELECT ssn FROM testapp_person WHERE name = 'a'")[0][0]
        self.assertTrue(bytes(stored).startswith(b"KB\x01\x01"))
        self.assertNotIn(b"123-45", bytes(stored))

    def test_value_is_bound_to_its_row_and_column(self) -> None:
        Person.objects.create(name="a", ssn="ssn-a", email="a@x.io")
        Person.objects.create(name="b", ssn="ssn-b")
        execute("UPDATE testapp_person SET ssn = (SELECT ssn FROM testapp_person WHERE name = 'a') WHERE name = 'b'")
        with self.assertRaises(kmsbox.IntegrityError):
            Person.objects.get(name="b")
        self.assertEqual(Person.objects.get(name="a").ssn, "ssn-a")
        execute("UPDATE testapp_person SET ssn = email WHERE name = 'a'")
        with self.assertRaises(kmsbox.IntegrityError):
            Person.objects.get(name="a")

    def test_tampered_value_fails_and_row_is_left_as_it_was(self) -> None:
        person = Person.objects.create(name="a", ssn="secret-ssn")
        stored = bytes(raw("SELECT ssn FROM testapp_person")[0][0])
        for blob in (stored[:-1] + bytes([stored[-1] ^ 1]), stored[:30], b"garbage"):
            execute("UPDATE testapp_person SET ssn = %s", [blob])
            with self.assertRaises(kmsbox.IntegrityError) as caught:
                Person.objects.get(pk=person.pk)
            self.assertNotIn("secret", str(caught.exception))
            self.assertEqual(bytes(raw("SELECT ssn FROM testapp_person")[0][0]), blob)

    def test_bad_values_are_refused_and_the_row_is_unchanged(self) -> None:
        person = Person.objects.create(name="a", ssn="ok")
        cases: list[tuple[str, Any, type[Exception]]] = [
            ("ssn", "x" * 65, ValueTooLarge),
            ("ssn", 42, WrongValueType),
            ("photo", "not bytes", WrongValueType),
            ("prefs", {"x": float("inf")}, WrongValueType),
        ]
        for attribute, value, error in cases:
            setattr(person, attribute, value)
            with self.assertRaises(error) as caught, transaction.atomic():
                person.save()
            self.assertIsInstance(caught.exception, kmsbox.KmsboxError)
            self.assertEqual(Person.objects.get(pk=person.pk).ssn, "ok")
            person = Person.objects.get(pk=person.pk)
        with self.assertRaises(ValueTooLarge), transaction.atomic():
            Person.objects.create(name="big", ssn="y" * 100)
        self.assertEqual(Person.objects.count(), 1)

    def test_plaintext_in_sql_is_refused(self) -> None:
        Person.objects.create(name="a", ssn="ok")
        with self.assertRaises(FieldError):
            Person.objects.filter(ssn="ok").count()
        with self.assertRaises(WrongValueType), transaction.atomic():
            Person.objects.update(ssn="plain")
        with self.assertRaises(ValueError), transaction.atomic():
            Person.objects.bulk_create([Person(name="bulk", ssn="x")])
        self.assertEqual(Person.objects.filter(ssn__isnull=False).count(), 1)
        self.assertEqual(Person.objects.get().ssn, "ok")
        with self.assertRaises(WrongValueType):
            Person.objects.filter(email_index="a@x.io").count()

    def test_application_keys_bulk_create_refresh_and_deferred_loads(self) -> None:
        tokens = Token.objects.bulk_create([Token(secret=f"t{i}") for i in range(5)])
        self.assertEqual(sorted(t.secret for t in Token.objects.all()), [f"t{i}" for i in range(5)])
        token = Token.objects.get(pk=tokens[0].pk)
        token.secret = "changed"
        token.save()
        token.refresh_from_db()
        self.assertEqual(token.secret, "changed")
        person = Person.objects.create(name="d", ssn="deferred")
        lazy = Person.objects.only("name").get(pk=person.pk)
        self.assertEqual(lazy.ssn, "deferred")
        self.assertIsInstance(Person.objects.values_list("ssn", flat=True).get(), Sealed)

    def test_multi_table_inheritance(self) -> None:
        employee = Employee.objects.create(name="e", ssn="p-ssn", badge="b-1", email="e@x.io")
        loaded = Employee.objects.get(pk=employee.pk)
        self.assertEqual((loaded.ssn, loaded.badge, loaded.email), ("p-ssn", "b-1", "e@x.io"))
        self.assertEqual(Person.objects.get(pk=employee.pk).ssn, "p-ssn")
        self.assertEqual(Employee.objects.get(email_index=blind("E@x.io")).badge, "b-1")

    def test_a_missing_kek_version_is_key_unavailable(self) -> None:
        old, new = secrets.token_hex(32), secrets.token_hex(32)
        with override_settings(KMSBOX_ORM={"KEK": ["env://DJ_ROTATING"], "INDEX_GRACE": 0}):
            os.environ["DJ_ROTATING"] = f"v1:{old}"
            token = Token.objects.create(secret="s")
            os.environ["DJ_ROTATING"] = f"v2:{new}"
            reset_config()
            with self.assertRaises(kmsbox.KeyUnavailable):
                Token.objects.get(pk=token.pk)
            os.environ["DJ_ROTATING"] = f"v2:{new},v1:{old}"
            reset_config()
            self.assertEqual(Token.objects.get(pk=token.pk).secret, "s")

    def test_reading_many_rows_costs_kms_calls_per_data_key(self) -> None:
        Token.objects.bulk_create([Token(secret=f"s{i}") for i in range(1000)])
        counting = CountingKek(kmsbox.open_kek(f"env://{KEK_VAR}"))
        with override_settings(KMSBOX_ORM={"KEK": [counting]}):
            self.assertEqual(len({t.secret for t in Token.objects.all()}), 1000)
        self.assertEqual(counting.total, 1)


class BlindIndexTests(FreshConfig, TestCase):
    def test_lookups_normalise_and_match(self) -> None:
        for email in ("Alice@Example.com", "bob@example.com"):
            Person.objects.create(name=email, email=email)
        Person.objects.create(name="none")
        self.assertEqual(Person.objects.get(email_index=blind(" alice@example.COM")).name, "Alice@Example.com")
        self.assertFalse(Person.objects.filter(email_index=blind("carol@example.com")).exists())
        both = Person.objects.filter(email_index__in=[blind("BOB@example.com"), blind("alice@example.com")])
        self.assertEqual(both.count(), 2)
        self.assertEqual(Person.objects.get(email_index__isnull=True).name, "none")
        person = Person.objects.get(email_index=blind("bob@example.com"))
        person.email = "robert@example.com"
        person.save()
        self.assertFalse(Person.objects.filter(email_index=blind("bob@example.com")).exists())
        self.assertTrue(Person.objects.filter(email_index=blind("robert@example.com")).exists())
        self.assertTrue(
            all(
                len(bytes(r[0])) == 18
                for r in raw("SELECT email_index FROM testapp_person WHERE email_index IS NOT NULL")
            )
        )


class RewriteTests(FreshConfig, TransactionTestCase):
    def _rotate(self) -> None:
        os.environ[KEK_VAR] = f"v2:{secrets.token_hex(32)},v1:{self.v1}"
        reset_config()

    def setUp(self) -> None:
        self.v1 = os.environ[KEK_VAR]
        os.environ[KEK_VAR] = f"v1:{self.v1}"
        super().setUp()

    def tearDown(self) -> None:
        os.environ[KEK_VAR] = self.v1
        reset_config()
        super().tearDown()

    def test_kek_rotation_job_resume_and_report(self) -> None:
        people = [Person.objects.create(name=str(i), ssn=f"ssn-{i}", email=f"{i}@x.io") for i in range(250)]
        self._rotate()
        self.assertEqual(scan_field(Person, "ssn").kek_versions, {"v1": 250})
        dry = rewrite_field(Person, "ssn", dry_run=True)
        self.assertEqual((dry.reasons, dry.written), ({"old-kek": 250}, 0))
        partial = rewrite_field(Person, "ssn", batch_size=100, max_batches=1)
        self.assertEqual((partial.written, partial.finished), (100, False))
        rest = rewrite_field(Person, "ssn", batch_size=100)
        self.assertTrue(rest.resumed and rest.finished)
        self.assertEqual((rest.written, rest.reasons), (250, {"old-kek": 250}))
        self.assertEqual(scan_field(Person, "ssn").kek_versions, {"v2": 250})
        self.assertEqual({p.pk: p.ssn for p in Person.objects.all()}, {p.pk: f"ssn-{i}" for i, p in enumerate(people)})
        self.assertEqual(raw("SELECT count(*) FROM kmsbox_orm_checkpoints")[0][0], 0)

    def test_index_key_rotation_and_reindex(self) -> None:
        for i in range(120):
            Person.objects.create(name=str(i), email=f"user{i}@x.io")
        keyring = get_config().keyring
        self.assertEqual(keyring.rotate("testapp_person.email", grace=0), 2)
        Person.objects.create(name="new", email="new@x.io")
        rewrite_field(Person, "email", batch_size=50, max_batches=1)
        self.assertEqual(scan_field(Person, "email").index_versions, {1: 70, 2: 51})
        for email in ("user0@x.io", "user119@x.io", "new@x.io"):
            self.assertEqual(Person.objects.filter(email_index=blind(email)).count(), 1)
        report = rewrite_field(Person, "email", batch_size=50)
        # A resumed run reports the whole job: the first batch's 50 and the remaining 70.
        self.assertEqual((report.resumed, report.reasons), (True, {"index": 120}))
        keyring.retire("testapp_person.email", 1)
        self.assertEqual(Person.objects.get(email_index=blind("user7@x.io")).name, "7")

    def test_failed_rows_are_reported_and_left(self) -> None:
        for i in range(10):
            Person.objects.create(name=str(i), ssn=f"s{i}")
        execute("UPDATE testapp_person SET ssn = %s WHERE name = '3'", [b"garbage"])
        self._rotate()
        report = rewrite_field(Person, "ssn")
        self.assertEqual((report.failed, report.written), (1, 9))
        self.assertEqual(bytes(raw("SELECT ssn FROM testapp_person WHERE name = '3'")[0][0]), b"garbage")

    def test_job_beside_a_concurrent_writer_loses_nothing(self) -> None:
        ids = [Person.objects.create(name=str(i), ssn=f"ssn-{i}").pk for i in range(800)]
        expected = {pk: f"ssn-{i}" for i, pk in enumerate(ids)}
        self._rotate()
        stop = threading.Event()
        written: dict[int, str] = {}
        errors: list[BaseException] = []

        def writer() -> None:
            rng = random.Random(5)
            try:
                while not stop.is_set():
                    pk = rng.choice(ids)
                    person = Person.objects.get(pk=pk)
                    person.ssn = f"app-{rng.randrange(10**9)}"
                    person.save()
                    written[pk] = person.ssn
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.1)
            report = rewrite_field(Person, "ssn", batch_size=50)
        finally:
            stop.set()
            thread.join()
        self.assertEqual(errors, [])
        self.assertTrue(report.finished and report.failed == 0 and len(written) > 5)
        self.assertEqual({p.pk: p.ssn for p in Person.objects.all()}, expected | written)
        scan = scan_field(Person, "ssn")
        self.assertEqual((scan.old_kek, scan.current), (0, 800))


class LegacyTests(FreshConfig, TestCase):
    def test_fernet_fields_rows_read_then_migrate(self) -> None:
        notes = {FernetNote.objects.create(body=f"note {i} é").pk: f"note {i} é" for i in range(30)}
        FernetNote.objects.create(body=None)
        self.assertEqual({n.pk: n.body for n in FernetNoteMigrated.objects.exclude(body__isnull=True)}, notes)
        self.assertEqual(scan_field(FernetNoteMigrated, "body").legacy, 30)
        report = rewrite_field(FernetNoteMigrated, "body", batch_size=7)
        self.assertEqual((report.reasons, report.written, report.null), ({"legacy": 30}, 30, 1))
        self.assertTrue(
            all(
                bytes(r[0]).startswith(b"KB\x01\x01")
                for r in raw("SELECT body FROM legacy_fernet_notes WHERE body IS NOT NULL")
            )
        )
        self.assertEqual({n.pk: n.body for n in FernetNoteMigrated.objects.exclude(body__isnull=True)}, notes)

    def test_django_cryptography_rows_read_then_migrate(self) -> None:
        rows = {CryptoNote.objects.create(body=f"body {i}", data={"i": i, "l": [1, "x"]}).pk: i for i in range(25)}
        loaded = {n.pk: (n.body, n.data) for n in CryptoNoteMigrated.objects.all()}
        self.assertEqual(loaded, {pk: (f"body {i}", {"i": i, "l": [1, "x"]}) for pk, i in rows.items()})
        self.assertEqual(rewrite_field(CryptoNoteMigrated, "body").reasons, {"legacy": 25})
        self.assertEqual(rewrite_field(CryptoNoteMigrated, "data").reasons, {"legacy": 25})
        self.assertEqual({n.pk: (n.body, n.data) for n in CryptoNoteMigrated.objects.all()}, loaded)

    def test_a_forged_legacy_value_is_refused(self) -> None:
        note = CryptoNote.objects.create(body="b")
        stored = bytes(raw("SELECT body FROM legacy_crypto_notes")[0][0])
        execute("UPDATE legacy_crypto_notes SET body = %s", [stored[:-1] + bytes([stored[-1] ^ 1])])
        with self.assertRaises(kmsbox.IntegrityError):
            CryptoNoteMigrated.objects.get(pk=note.pk)
        self.assertEqual(rewrite_field(CryptoNoteMigrated, "body").failed, 1)


class CommandTests(FreshConfig, TransactionTestCase):
    def test_management_commands(self) -> None:
        import io
        import json

        from django.core.management import call_command

        for i in range(20):
            Person.objects.create(name=str(i), ssn=f"s{i}", email=f"{i}@x.io")
        out = io.StringIO()
        call_command("kmsbox_status", "testapp.Person.ssn", json=True, stdout=out)
        self.assertEqual(json.loads(out.getvalue())["current"], 20)
        out = io.StringIO()
        call_command("kmsbox_rewrite", "testapp.Person.ssn", force=True, stdout=out)
        self.assertIn("wrote 20 (forced 20)", out.getvalue())
        out = io.StringIO()
        call_command("kmsbox_index_keys", "rotate", "testapp_person.email", grace=0, json=True, stdout=out)
        self.assertEqual(json.loads(out.getvalue())["version"], 2)
        with self.assertRaises(ValueError):
            call_command("kmsbox_rewrite", "testapp.Person.name")
        with self.assertRaises(ValueError):
            call_command("kmsbox_index_keys", "retire", "testapp_person.email", "1")

    def test_tokens_keep_uuid_keys(self) -> None:
        token = Token.objects.create(id=uuid.uuid4(), secret="s")
        self.assertEqual(Token.objects.get(pk=token.pk).secret, "s")


class AtomicInsertTests(FreshConfig, TransactionTestCase):
    def test_a_failed_seal_after_the_insert_leaves_no_placeholder_row(self) -> None:
        # Autocommit mode: Django commits a plain INSERT before post_save, where a
        # database-generated key's values are sealed; the plugin makes both one transaction.
        from kmsbox.testing.fake_kek import FakeKek

        kek = FakeKek()
        kek.faults.configure(rate=1.0, kind="denied")
        with override_settings(KMSBOX_ORM={"KEK": [kek]}):
            self.assertTrue(connection.get_autocommit())
            with self.assertRaises(kmsbox.ProviderError):
                Person.objects.create(name="lost", ssn="123")
            self.assertEqual(Person.objects.count(), 0)
            kek.faults.clear()
            Person.objects.create(name="kept", ssn="456")
            self.assertEqual(Person.objects.get().ssn, "456")
