#!/usr/bin/env node
// The `eco3d` command. The sources are TypeScript run through tsx's loader, so `npm ci` is the
// whole install: there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('../server/cli.ts');
