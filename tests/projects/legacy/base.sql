-- The same tables as legacy_app.schema.create_all, as a DBA would have dumped them.
CREATE TABLE author (id SERIAL PRIMARY KEY, name VARCHAR(100));
CREATE TABLE book (id SERIAL PRIMARY KEY, title VARCHAR(200), author_id INTEGER);
