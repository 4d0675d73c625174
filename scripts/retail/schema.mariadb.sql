-- The sample retail schema for MariaDB (the ODBC provider's tests and
-- benchmark). Matches mappings/retail.yaml. Timestamps are DATETIME(6) in
-- UTC (the connector's sessions run with time_zone '+00:00').
CREATE TABLE IF NOT EXISTS stores (store_id INT PRIMARY KEY, name VARCHAR(200) NOT NULL, city VARCHAR(200),
    opened_on DATE);
CREATE TABLE IF NOT EXISTS customers (customer_id INT PRIMARY KEY, store_id INT, name VARCHAR(200),
    email VARCHAR(200), deleted BOOLEAN NOT NULL DEFAULT 0, created_at DATETIME(6));
CREATE TABLE IF NOT EXISTS categories (id CHAR(36) PRIMARY KEY, name VARCHAR(200) NOT NULL);
CREATE TABLE IF NOT EXISTS products (product_id INT PRIMARY KEY, category_id CHAR(36), name VARCHAR(200) NOT NULL,
    price DECIMAL(10,2), attributes JSON);
CREATE TABLE IF NOT EXISTS inventory (id CHAR(36) PRIMARY KEY, store_id INT NOT NULL, product_id INT NOT NULL,
    quantity INT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (order_id BIGINT PRIMARY KEY, customer_id INT, store_id INT,
    order_date DATETIME(6), status VARCHAR(20), total DECIMAL(12,2));
CREATE TABLE IF NOT EXISTS order_items (id CHAR(36) PRIMARY KEY, order_id BIGINT NOT NULL, product_id INT NOT NULL,
    quantity INT NOT NULL, price DECIMAL(10,2));
CREATE TABLE IF NOT EXISTS store_order_numbers (store_id INT NOT NULL, order_no INT NOT NULL,
    issued_at DATETIME(6), note VARCHAR(200), PRIMARY KEY (store_id, order_no));
