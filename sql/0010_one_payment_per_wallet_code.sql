-- A scanned wallet code pays once (finding 05, decision 0027). A PASSIVEPAY carries the customer's
-- single-use payment code (auth_code); a POS retrying with a new Idempotency-Key stored a second order
-- with the same code and both were sent to OTT Pay. From now on one merchant's code makes at most one
-- order: the api answers a second one 409 auth_code_used, naming the first.

-- Orders taken before this migration may already repeat a code: each such repeat (every order after the
-- first, by id, of one merchant and code) is marked and left out of the constraint. They are possible
-- double charges, for finance to check: SELECT … FROM orders WHERE auth_code_repeat.
ALTER TABLE orders ADD COLUMN auth_code_repeat boolean NOT NULL DEFAULT false;
UPDATE orders o SET auth_code_repeat = true
WHERE o.kind = 'PASSIVEPAY'
  AND EXISTS (
      SELECT 1 FROM orders e
      WHERE e.merchant_id = o.merchant_id AND e.auth_code = o.auth_code AND e.kind = 'PASSIVEPAY' AND e.id < o.id
  );
-- Only this migration sets it (intake never does): every order taken from now on is under the index.
ALTER TABLE orders ADD CONSTRAINT orders_auth_code_repeat_check CHECK (NOT auth_code_repeat OR kind = 'PASSIVEPAY');

-- ACTIVEPAY orders hold no code (orders_auth_code_check), so the index covers exactly the PASSIVEPAY ones.
CREATE UNIQUE INDEX orders_auth_code_key ON orders (merchant_id, auth_code)
    WHERE kind = 'PASSIVEPAY' AND NOT auth_code_repeat;
