/* The smallest program to exec: the floor for exec-mode spawning. Linked statically. */
int main(void)
{
        return 0;
}
