-- A verified callback is identified by its whole body, not by (merchant_id, md5) (decision 0026).
-- The md5 signs only the values of the decrypted data: rsp_code, rsp_msg and any extra envelope field are
-- not signed, so anyone who saw a genuine callback can send a copy with rsp_code FAIL. Keyed on
-- (merchant_id, md5), whichever copy came first occupied the key and the genuine one was dropped as a
-- duplicate. Now every distinct verified body is a row (evidence); an identical redelivery is still one.
-- jsonb_send: jsonb's canonical form (key order and spacing do not count), immutable, so it can be stored.
ALTER TABLE callbacks
    ADD COLUMN envelope_sha256 text GENERATED ALWAYS AS (encode(sha256(jsonb_send(envelope)), 'hex')) STORED;
ALTER TABLE callbacks ADD CONSTRAINT callbacks_body_key UNIQUE (merchant_id, md5, envelope_sha256);
ALTER TABLE callbacks DROP CONSTRAINT callbacks_merchant_md5_key;
