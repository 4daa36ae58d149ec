// The users API with plain fetch, typed by `paths` from users.ts: a route, method, status or
// field that the API no longer has stops this file from compiling.
import type { paths } from "./users";

type Me = paths["/users/me"]["get"];
export type User = Me["responses"][200]["content"]["application/json"];

export async function fetchMe(baseUrl: string, sessionToken: string): Promise<User | null> {
  const path: keyof paths = "/users/me";
  const response = await fetch(`${baseUrl}${path}`, {
    headers: { Authorization: `Bearer ${sessionToken}` },
  });
  if (response.status === 404) {
    return null; // not synced yet, or deleted
  }
  if (!response.ok) {
    throw new Error(`users API answered ${response.status}`);
  }
  return (await response.json()) as User;
}

export function describe(user: User): string {
  return user.email ? `${user.name} <${user.email}>` : user.name;
}
