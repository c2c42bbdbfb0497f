import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Eco3dError } from '../protocols/index.ts';
import { loadConfig, parseRobotTarget } from './config.ts';

describe('configuration', () => {
  test('defaults: demo mode on loopback, embedded database, simulated robot', () => {
    const c = loadConfig({ flags: {}, env: {} });
    assert.equal(c.port, 8080);
    assert.equal(c.host, '127.0.0.1');
    assert.deepEqual(c.robot, { kind: 'sim' });
    assert.equal(c.databaseUrl, undefined);
    assert.ok(c.dataDir.endsWith('/eco3d-data'));
    assert.equal(c.deadmanTimeoutMs, 300);
    assert.equal(c.tenantId, 'demo');
    assert.equal(c.deviceId, 'sim-1');
  });

  test('flags win over the environment', () => {
    const c = loadConfig({ flags: { port: '9000', robot: 'ros:ws://robot:9090' }, env: { PORT: '7000', ECO3D_ROBOT: 'sim', ECO3D_DATA: '/tmp/x' } });
    assert.equal(c.port, 9000);
    assert.deepEqual(c.robot, { kind: 'ros', url: 'ws://robot:9090' });
    assert.equal(c.dataDir, '/tmp/x');
  });

  test('every bad value is reported at once, each naming its source', () => {
    try {
      loadConfig({
        flags: { port: '-1', host: 'my laptop', tlsCert: 'a.pem' },
        env: { DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud', ECO3D_ADMIN_PASSWORD: 'short', ECO3D_TENANT: 'Bad Tenant' },
      });
      assert.fail('expected ECO3D_ERR_CONFIG');
    } catch (err) {
      assert.ok(err instanceof Eco3dError);
      assert.equal(err.code, 'ECO3D_ERR_CONFIG');
      for (const needle of ['--port', '--host', '--tls-cert and --tls-key go together', 'DATABASE_URL', 'LOG_LEVEL', 'ECO3D_ADMIN_PASSWORD', 'ECO3D_TENANT']) {
        assert.ok(err.message.includes(needle), `message lacks ${needle}: ${err.message}`);
      }
    }
  });

  test('an external PACS and FHIR server: URL from the flag, credentials from the environment only', () => {
    const c = loadConfig({
      flags: { pacs: 'http://pacs.example:8042/dicom-web/', fhirServer: 'https://fhir.example/r4' },
      env: { ECO3D_PACS_USER: 'eco3d', ECO3D_PACS_PASSWORD: 'pw', ECO3D_FHIR_SERVER_TOKEN: 't0k' },
    });
    assert.deepEqual(c.pacs, { url: 'http://pacs.example:8042/dicom-web', auth: { kind: 'basic', username: 'eco3d', password: 'pw' } });
    assert.deepEqual(c.fhirServer, { url: 'https://fhir.example/r4', auth: { kind: 'bearer', token: 't0k' } });
    assert.equal(loadConfig({ flags: {}, env: {} }).pacs, undefined);
    assert.deepEqual(loadConfig({ flags: { pacs: 'dicom://ORTHANC@10.0.0.5:4242' }, env: {} }).pacs, { url: 'dicom://ORTHANC@10.0.0.5:4242', auth: undefined });
    assert.throws(
      () => loadConfig({ flags: { pacs: 'ftp://x', publicUrl: 'nope' }, env: { ECO3D_FHIR_SERVER_USER: 'u', ECO3D_PACS_USER: 'u' } }),
      (err: unknown) => {
        assert.ok(err instanceof Eco3dError);
        for (const needle of ['--pacs: expected an http(s) URL', '--public-url', 'ECO3D_FHIR_SERVER_USER/ECO3D_FHIR_SERVER_TOKEN given without']) {
          assert.ok(err.message.includes(needle), `message lacks ${needle}: ${err.message}`);
        }
        return true;
      },
    );
    assert.throws(() => loadConfig({ flags: { pacs: 'http://user:pw@pacs' }, env: {} }), /without credentials/);
    assert.throws(() => loadConfig({ flags: { pacs: 'http://pacs' }, env: { ECO3D_PACS_USER: 'u' } }), /go together/);
  });

  test('robot targets', () => {
    assert.deepEqual(parseRobotTarget('serial:/dev/ttyUSB0'), { kind: 'serial', path: '/dev/ttyUSB0', baudRate: 115200 });
    assert.deepEqual(parseRobotTarget('serial:/dev/ttyACM1@1000000'), { kind: 'serial', path: '/dev/ttyACM1', baudRate: 1000000 });
    assert.throws(() => parseRobotTarget('serial:ttyUSB0'), /absolute/);
    assert.throws(() => parseRobotTarget('serial:/dev/x@fast'), /baud/);
    assert.throws(() => parseRobotTarget('ros:http://x'), /ros:ws/);
    assert.throws(() => parseRobotTarget('usb'), /expected sim/);
  });
});
