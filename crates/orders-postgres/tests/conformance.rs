//! The repository contract, checked against a real PostgreSQL (one database per test).

orders_domain::repository_conformance_tests!(orders_postgres::testing::test_repository());
